"""The connect flows and the order stream in a real browser (headless Chromium over CDP).

Runs when Chromium is installed (Debian package ``chromium``; ``BROWSER_BIN`` names another
binary) and is skipped, with that reason, otherwise. Screenshots of every flow are written to
``tests/output/browser/`` (git-ignored; ``BROWSER_SCREENSHOTS`` names another directory).
"""
