"""
Everything txpipe does only for Twisted releases older than 24.7.0.
"""
