"""Weight compression for Core AI programs (this distribution provides ``coreai_opt.coreai_utils``)."""

__version__ = "0.1.0"
