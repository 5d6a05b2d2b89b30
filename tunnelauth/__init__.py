"""tunnelauth: carry a browser's OAuth loopback callback to a CLI on a remote host over SSH."""

__version__ = "0.1.0"
