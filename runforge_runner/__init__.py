"""RunForge's runner: trains scikit-learn models on CSV data and speaks the runner contract.

Importing the package is cheap on purpose: ``python -m runforge_runner`` installs its
cancel handler before anything slow (scikit-learn) is imported.
"""

__version__ = "0.1.0"
