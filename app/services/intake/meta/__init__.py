"""Meta's callbacks: ``signed_request`` verifies them, ``callbacks`` files what they ask for."""
