"""What runs the model: the batched forward over the paged KV cache, CUDA graphs, the KV
cache's size, the sampler, and the choice of kernel backend."""
