"""Integration tests of the registry process: a real `meshctl registry` on 127.0.0.1 ports."""
