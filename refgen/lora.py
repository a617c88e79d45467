def generate(*a, **k):
    pass
