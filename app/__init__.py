"""soundops-deletion: verified personal-data deletion for SoundOps."""

__version__ = "0.1.0"
