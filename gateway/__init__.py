"""dsgw: the cross-department data-sharing gateway."""

__version__ = "0.2.7"
