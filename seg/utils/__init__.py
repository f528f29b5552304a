"""Plumbing with no segmentation knowledge: command wrappers and error text, config composition, atomic writes,
downloads, optional extras, progress bars, logger factories, the machine's precision rule. Imports nothing else
from seg."""
