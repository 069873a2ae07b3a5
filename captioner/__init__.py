"""captioner: Show, Attend and Tell image captioning.

`from captioner import Captioner` is the entry point for Python users (see captioner.inference).
"""

__version__ = "0.1.0"
__all__ = ["Captioner"]


def __getattr__(name: str):
    # imported on first use, so that `captioner --help` does not pay for importing torch
    if name == "Captioner":
        from captioner.inference import Captioner  # noqa: PLC0415

        return Captioner
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
