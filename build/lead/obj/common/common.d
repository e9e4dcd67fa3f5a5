build/lead/obj/common/common.o: common/common.c common/buf.h \
 common/checksum.h common/err.h common/hist.h common/log.h common/util.h
common/buf.h:
common/checksum.h:
common/err.h:
common/hist.h:
common/log.h:
common/util.h:
