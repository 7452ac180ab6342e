"""The version of xaibench, in a module of its own so that any module can import it without importing the package
root (which offers the API and would import the engine)."""
__version__ = "0.6.0"
