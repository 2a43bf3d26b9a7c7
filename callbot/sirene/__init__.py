"""Answers about the caller's own company from the public Sirene register (INSEE).

``importer`` loads the monthly open-data stock files into a local copy, ``lookup`` reads
it (with the privacy rules of the register enforced inside the lookup itself), ``labels``
gives APE codes their official label, ``cli`` is ``callbot sirene``.
"""
