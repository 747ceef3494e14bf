# The kit's commands. `make demo` and `make test` do all the set-up they need on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: setup system-packages release solutions test demo mutants calibrate bench clean

setup: $(STAMP) system-packages

$(STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	@rm -f .venv/.installed-* && touch $@

# bubblewrap is the sandbox; chromium renders the feedback pages in the tests. Both are optional
# at run time (the grader falls back and says so), so a failed install does not stop set-up.
system-packages:
	@missing=""; command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null) \
	    || echo "could not install$$missing; the grader will report its fallback"; \
	fi

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider

clean:
	rm -rf build
