"""``tunnelauth demo``: the real flow against a simulated remote host, all inside this process.

An asyncssh server on a random loopback port plays the remote: it runs a hermes-like login
program and serves its callback listener on a *virtual* remote loopback. A tiny local page
plays the OAuth provider. Nothing leaves this machine.
"""
