"""pciback-doctor: will pciback own each passthrough device after the next Xen boot?"""

__version__ = "0.1.0"
