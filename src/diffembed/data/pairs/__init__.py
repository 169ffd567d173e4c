"""data/pairs"""
