"""Gold sets: the rows people label, their spreadsheets, their frozen splits, and the commands that grow them."""
