"""Protocol-faithful local stand-ins for every external service, served on 127.0.0.1."""
