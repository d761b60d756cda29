"""The opt-in PIE treatment study: are PIEs hard examples to keep or noise to remove?"""
