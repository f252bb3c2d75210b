"""Settings: every settings model (frozen pydantic, unknown keys rejected). Torch-free; imports nothing else of smvi."""
