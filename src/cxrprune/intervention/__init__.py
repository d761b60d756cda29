"""The opt-in frequency intervention study: does frequency itself make a class forgettable?"""
