def register(sub):  # placeholder until rlad serve lands
    pass
