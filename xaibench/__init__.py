"""xaibench: benchmark attribution methods on medical images.

data -> models -> training -> methods (explanations) -> metrics (scores) -> tables.
"""
__version__ = "0.4.0"
