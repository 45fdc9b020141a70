"""Files the device needs at run time (the smoke-test frame); a package so that wheels include them."""
