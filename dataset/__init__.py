"""Raw datasets: download, clean and split them, or generate the embedded sample world."""
