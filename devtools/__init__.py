"""Development tools: the local stack (Azurite, local Autopilot and Key Vault servers, local runner).

Never deployed (see ``.funcignore``); they exist so that the real clients run against real sockets.
"""
