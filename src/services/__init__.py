"""Business logic: images, VMs and the tasks that build and delete them."""
