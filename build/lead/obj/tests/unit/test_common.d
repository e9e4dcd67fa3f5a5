build/lead/obj/tests/unit/test_common.o: tests/unit/test_common.c \
 common/buf.h common/checksum.h common/err.h common/hist.h common/util.h
common/buf.h:
common/checksum.h:
common/err.h:
common/hist.h:
common/util.h:
