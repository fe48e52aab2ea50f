reducers = {42: print}
