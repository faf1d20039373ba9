"""Recommendations: the SQLite store, embeddings, FAISS indexes, profiles, ranking, import, daily
digest and offline evaluation. Never imports discord or model."""
