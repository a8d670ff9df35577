"""The word lists the edit search consults: negations, auxiliaries, function words, quantifiers,
contractions and polarity-swapped emoticons."""

NEGATIONS = {"not", "never", "no", "n't", "nothing", "none", "nobody", "neither", "nor", "cannot"}
AUXILIARIES = {"is", "was", "are", "were", "am", "be", "been", "do", "does", "did", "has", "have", "had", "can",
               "could", "will", "would", "should", "must", "may", "might", "'s", "'re", "'m"}
# Function words: never replaced by an "antonym" (WordNet has under -> dominant) nor deleted.
STOPWORDS = {"a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "onto", "over",
             "under", "about", "above", "below", "up", "down", "out", "off", "through", "and", "or", "but", "if",
             "as", "than", "then", "so", "that", "this", "these", "those", "it", "its", "i", "me", "my", "we", "us",
             "our", "you", "your", "he", "him", "his", "she", "her", "they", "them", "their", "who", "whom",
             "which", "what", "when", "where", "why", "how", "other", "some", "any", "all", "each", "own", "same",
             "such", "there", "here", "just", "also", "too", "very", "'s", "'re", "'m", "'ve", "'ll", "'d"}
# Degree and quantity words that WordNet lists as adjectives but that a substitute adjective cannot replace.
QUANTIFIERS = {"more", "most", "less", "least", "much", "many", "few", "fewer", "enough", "only", "just", "like",
               "unlike", "same", "own", "other", "such", "certain", "several", "whole", "entire", "single",
               "first", "last", "next"}
CONTRACTIONS = {"can't": "can", "won't": "will", "shan't": "shall", "ain't": "is", "cannot": "can"}
# emoticons and emoji swapped for their opposite (both directions)
EMOTICONS = {":)": ":(", ":-)": ":-(", ":d": ":(", "=)": "=(", ";)": ":(", "<3": "</3", ":]": ":[",
             "\U0001F60A": "\U0001F61E", "\U0001F600": "\U0001F620", "\U0001F60D": "\U0001F612",
             "\U0001F642": "\U0001F641", "\U0001F44D": "\U0001F44E", "\u2764\ufe0f": "\U0001F494",
             "\u2764": "\U0001F494"}
EMOTICONS.update({b: a for a, b in list(EMOTICONS.items()) if b not in EMOTICONS})
# words a language model proposes that carry no content of their own (besides STOPWORDS and AUXILIARIES)
FUNCTION_WORDS = {"because", "while", "although", "though", "since", "until", "unless", "whether", "would",
                  "should", "could", "will", "can", "might", "must", "shall", "doesn", "didn", "isn", "wasn",
                  "don", "aren", "weren", "hasn", "haven", "won", "wouldn", "couldn", "shouldn", "one", "ones",
                  "something", "anything", "everything", "someone", "anyone", "everyone", "itself", "himself",
                  "herself", "themselves", "yourself", "myself", "ourselves", "both", "either", "another"}
