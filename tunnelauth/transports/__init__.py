"""SSH transports: each carries one remote process and its direct-tcpip channels over ONE connection."""
