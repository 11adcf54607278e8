"""aarch64 checks of exported artifacts under qemu-user: set-up (`setup_cache`), the run inside the
emulated CPU (`guest`), and the comparison with the x86 run (`check`). See README "ARM64"."""
