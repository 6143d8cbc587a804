"""LlamaEdge-style retrieval: uploaded files, token-bounded chunks, a Qdrant vector store."""
