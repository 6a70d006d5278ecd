"""The main module a spawned worker imports before anything else (see launcher.spawn).

Importing it imports the package first, so a worker tunes its CPU and loads
Python's zlib before Paddle loads (Paddle 2.6's bundled libz would otherwise
bind first and gzip decompression crash in the worker).
"""
