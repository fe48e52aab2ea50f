reducers = {}
