build/lead/obj/common/loop.o: common/loop.c common/loop.h common/log.h \
 common/util.h
common/loop.h:
common/log.h:
common/util.h:
