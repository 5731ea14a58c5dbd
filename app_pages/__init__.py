"""The app's pages: thin views over the ``rag`` library."""
