"""Stand-in for PyRep (tests only; see ../README.md). Not PyRep."""

__version__ = "4.1.0.3-standin"
testing = True
