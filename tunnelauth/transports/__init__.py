"""SSH transports: one connection carries the remote process and its direct-tcpip channels."""
