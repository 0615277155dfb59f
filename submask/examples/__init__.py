"""Small real-model examples used by ``submask demo`` and by the test suite.

Importing this package needs neither torch nor transformers; the modules import them lazily.
"""
