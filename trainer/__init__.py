"""trainer: synthesize composites (FFHQH recipe), train PHNet (one GPU or torchrun DDP), evaluate it."""
