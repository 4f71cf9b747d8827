"""The request flow's steps, one module each; `pymk.serving.flow.STEPS` puts them in order."""
