# ingest-bridge build. `make` builds build/ingest-bridge; see README.md.

CC      ?= cc
PKGS    := libevent librabbitmq libxml-2.0 inih
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wundef
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) -Ibridge -Iamqp -Ihttp \
           $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lpthread
ifdef WERROR
CFLAGS  += -Werror
endif
ifdef SANITIZER
CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZER)
BUILD   ?= build/san
else
BUILD   ?= build
endif

SRC     := $(wildcard bridge/*.c http/*.c amqp/*.c)
OBJ     := $(SRC:%.c=$(BUILD)/obj/%.o)
LIBOBJ  := $(filter-out $(BUILD)/obj/bridge/main.o,$(OBJ))
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/%,$(wildcard tests/unit/test_*.c))

.PHONY: all clean unit
all: $(BUILD)/ingest-bridge

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libbridge.a: $(LIBOBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/ingest-bridge: $(BUILD)/obj/bridge/main.o $(BUILD)/libbridge.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libbridge.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell pkg-config --libs cmocka)

unit: $(UNIT)
	@set -e; for t in $(UNIT); do echo "== $$t"; $$t; done

clean:
	rm -rf build

-include $(OBJ:.o=.d)
