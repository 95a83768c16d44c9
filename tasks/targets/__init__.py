"""Places images live (Docker, AWS, ...), all behind the one ``Target`` interface."""
