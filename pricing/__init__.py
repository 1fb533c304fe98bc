"""Offers: what GPU nodes can be rented, where, at what price, as of when."""
