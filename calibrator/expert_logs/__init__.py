"""Expert logs: sessions read from dialogue logs and public corpora, cut into hindsight samples, sharded, written."""
