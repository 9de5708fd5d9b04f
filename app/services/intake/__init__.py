"""How deletion requests come in: one ``NewDeletion`` command (``command``) stored by one
path for every channel; ``rest`` (REST intake, reading, cancel, retry), ``meta`` (Meta's
signed callbacks) and ``email`` (the privacy@ mailbox) beside it."""
