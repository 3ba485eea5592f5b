"""The runtime every Octavia service shares: config, bootstrap, auth, errors, data clients."""
