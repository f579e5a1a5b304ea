"""Presentation built from the application's views: the timeline page and text reports."""
