"""The network inbox: a C-STORE listener whose received studies enter the pipeline as drops.

``listener`` speaks DICOM (pynetdicom); ``intake`` groups received instances per calling AE and
patient into open drops and closes them when idle; ``receiving`` owns the folders on disk, where
every instance is durable before its sender hears Success. The daemon claims closed drops like
drops from the inbox; nothing here imports the daemon.
"""
