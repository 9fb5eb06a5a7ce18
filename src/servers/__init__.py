"""The two HTTP servers the entry point (src/serve.py) runs the app behind, and their guards
against slow and greedy clients."""
