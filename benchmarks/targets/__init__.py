"""Where a benchmark runs: this host (`host`), an Android phone over adb (`adb`), a Mac with Core ML (`mac`)."""
